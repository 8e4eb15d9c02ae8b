// A demo Azure OpenAI account with one model deployment, keys disabled, plus the same keyless role
// assignments as the existing resources get (openai-rbac.bicep). main.bicep deploys one per entry of
// demoRegions and adds each to the gateway configuration.

@description('Name of the account; also its custom subdomain (<name>.openai.azure.com).')
param name string

@description('Azure region of the account.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Name of the model deployment (the physical deployment name).')
param deploymentName string

@description('Model to deploy (for example gpt-4o-mini).')
param modelName string

@description('Model version (for example 2024-07-18).')
param modelVersion string

@description('Deployment type: Standard (regional) or GlobalStandard.')
@allowed([
  'Standard'
  'GlobalStandard'
  'DataZoneStandard'
])
param skuName string = 'GlobalStandard'

@description('Quota of the deployment in thousands of tokens per minute.')
@minValue(1)
param capacity int = 10

@description('Principal id of the gateway Function App identity.')
param functionPrincipalId string

@description('Object id of the seed flow SPN; empty skips it.')
param spnObjectId string = ''

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  //checkov:skip=CKV_AZURE_134: a demo backend; the gateway calls it over its public endpoint with Entra ID (local auth disabled).
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource modelDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: skuName
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: 'OnceNewDefaultVersionAvailable'
  }
}

module rbac 'openai-rbac.bicep' = {
  name: take('openai-rbac-${name}', 64)
  params: {
    accountName: account.name
    functionPrincipalId: functionPrincipalId
    spnObjectId: spnObjectId
  }
}

output endpoint string = account.properties.endpoint
